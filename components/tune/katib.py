"""The cluster backend: submit the Experiment to Katib, follow it, read the optimal trial back.

Talks to the cluster only through the kubeflow-katib SDK's KatibClient
(create_experiment, get_experiment, list_trials, get_optimal_hyperparameters),
given explicit credentials: the kubernetes client reads $KUBECONFIG only once,
at import, so the file is named here.

The KatibClient turns every API failure into a bare RuntimeError ("Failed to
create Katib Experiment: ns/name"); the API server's status and message stay
on the exception's context, and are read back from there so a refusal is one
line that says why.

Before anything is sent, the Experiment is checked against the rules Katib
enforces only once it is running (its webhook and suggestion services), so a
search Katib would refuse fails in the CLI's pre-flight, naming the `tune`
field, instead of minutes later in the cluster. Locally these limits do not
apply (Optuna has none of them), which is why they live here and not in
experiment.py.

Nothing here deletes an Experiment: on a timeout it keeps running in the
cluster, and the error says how to follow or delete it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

from keel.components._common.errors import ConfigError, StorageError
from keel.components.tune.experiment import SPEC_HASH_ANNOTATION, experiment_dict
from keel.components.tune.trial import parse_value

EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"
# Katib trial condition -> the state names the local backend records (Optuna's), so
# a search's record reads the same whichever backend ran it.
_STATES = {"Succeeded": "COMPLETE", "EarlyStopped": "PRUNED", "Failed": "FAIL", "Killed": "FAIL",
           "MetricsUnavailable": "FAIL", "Running": "RUNNING", "Created": "WAITING"}
_FINISHED = ("COMPLETE", "PRUNED", "FAIL")


@dataclass(frozen=True)
class TrialRecord:
    """One Katib trial, as the tune stage records it."""

    number: int  # creation order, from 0
    name: str
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING or WAITING
    value: float | None  # the objective's latest value
    params: dict
    seconds: float | None
    reason: str | None  # why a trial did not complete (Katib's condition reason and message)


@dataclass
class KatibResult:
    best_params: dict
    best_value: float
    trials: list[dict] = field(default_factory=list)  # TrialRecord fields, creation order


def katib_problems(experiment: dict) -> list[str]:
    """What Katib would refuse in this Experiment (dict form), one line per problem naming the tune field."""
    spec = experiment["spec"]
    problems = []
    max_trials, parallel = spec["maxTrialCount"], spec["parallelTrialCount"]
    if spec["maxFailedTrialCount"] > max_trials:
        problems.append(f"tune.max_failed_trials ({spec['maxFailedTrialCount']}) is more than tune.max_trials "
                        f"({max_trials}); Katib refuses that")
    algorithm = spec["algorithm"]["algorithmName"]
    settings = {s["name"]: s["value"] for s in spec["algorithm"].get("algorithmSettings", [])}
    parameters = spec["parameters"]
    if algorithm == "hyperband":
        # As Katib's hyperband service validates it (pkg/suggestion/v1beta1/hyperband/service.py):
        # its first bracket starts eta**s_max trials at once.
        r_l, eta = float(settings["r_l"]), int(float(settings["eta"]))
        needed = int(math.ceil(eta ** int(math.log(r_l) / math.log(eta))))
        if parallel < needed:
            resource = settings["resource_name"]
            problems.append(f"tune.parallel_trials: Katib's hyperband starts {needed} trials at once when "
                            f"{resource} goes up to {settings['r_l']} (eta {eta}); set parallel_trials (and max_trials) "
                            f"to at least {needed}, or lower tune.parameters.{resource}.max")
    if algorithm == "cmaes" and sum(p["parameterType"] in ("int", "double") for p in parameters) < 2:
        problems.append("tune.parameters: Katib's cmaes needs at least two int or double parameters; add one or use tpe")
    if algorithm == "grid":
        points = grid_points(parameters)
        if max_trials > points:
            problems.append(f"tune.max_trials ({max_trials}) is more than the {points} points of the grid; "
                            f"Katib refuses that: lower it to {points} or add steps")
    return problems


def grid_points(parameters: list[dict]) -> int:
    """How many combinations Katib's grid enumerates (its optuna service's convert_to_combinations)."""
    import numpy as np

    sizes = []
    for p in parameters:
        space = p["feasibleSpace"]
        if p["parameterType"] == "categorical":
            sizes.append(len(space["list"]))
        elif p["parameterType"] == "int":
            sizes.append(len(range(int(space["min"]), int(space["max"]) + 1, int(space.get("step") or 1))))
        else:
            low, high, step = float(space["min"]), float(space["max"]), float(space["step"])
            values = np.arange(low, high + step, step)
            sizes.append(len(values) - int(values[-1] > high))
    return math.prod(sizes)


def run_on_katib(
    exp,
    namespace: str,
    timeout_s: float,
    on_progress: Callable[[TrialRecord, int, int], None] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    poll_s: float = 15.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> KatibResult:
    """Submits the Experiment to Katib in `namespace` and waits for it to finish.

    An Experiment of the same name that already exists is followed instead of
    created, when it carries the same spec hash: the name ends in that hash,
    so it is this very search (a retried pipeline step), and its trials are
    not run twice.

    Args:
        exp: experiment.build_experiment's V1beta1Experiment (its namespace is replaced by `namespace`).
        namespace: where Katib runs it (tune.namespace; a Kubeflow profile namespace).
        timeout_s: how long to wait for it to finish.
        on_progress: called as (trial, finished, max_trials) once per trial when it finishes.
        environ: where credentials are looked up (in-cluster, KUBECONFIG, ~/.kube/config); os.environ by default.
        poll_s: seconds between status reads.
        sleep, clock: the waiting and the time source (tests pass fakes).

    Returns:
        KatibResult: the optimal trial's parameters (typed as the search space
        says) and objective value, and every trial.

    Raises:
        ConfigError: Katib would refuse the search (see katib_problems), no
            cluster credentials, or the Experiment failed.
        StorageError: the API server refused or could not be reached, or the
            Experiment did not finish within timeout_s.
    """
    body = experiment_dict(exp)
    body["metadata"]["namespace"] = namespace
    name = body["metadata"]["name"]
    where = f"Katib Experiment {namespace}/{name}"
    problems = katib_problems(body)
    if problems:
        raise ConfigError("; ".join(problems))
    katib = _client(os.environ if environ is None else environ)
    reported: set[str] = set()
    try:
        _submit(katib, body, namespace, where)
        experiment = _follow(katib, body, namespace, where, timeout_s, on_progress, reported, poll_s, sleep, clock)
        optimal = _call(where, "read its optimal trial", katib.get_optimal_hyperparameters, name, namespace)
        trials = _trials(katib, body, namespace, where)
    finally:
        katib.custom_api.api_client.close()  # its thread pool, started by the SDK's async reads
    _report(trials, reported, on_progress, body["spec"]["maxTrialCount"])  # any the status counts had not shown yet
    metric = body["spec"]["objective"]["objectiveMetricName"]
    value = _metric(optimal.observation if optimal else None, metric)
    if value is None:
        raise ConfigError(f"{where} finished without a trial that reported {metric}: {_counts(experiment)}; "
                          f"check the trials with `kubectl -n {namespace} get trials -l {EXPERIMENT_LABEL}={name}`")
    types = {p["name"]: p["parameterType"] for p in body["spec"]["parameters"]}
    params = {a.name: _typed(a.value, types.get(a.name)) for a in optimal.parameter_assignments or []}
    return KatibResult(best_params=params, best_value=value, trials=[asdict(t) for t in trials])


def _client(environ: Mapping[str, str]):
    from kubeflow.katib import KatibClient

    from keel.components._common.kube import client_configuration, cluster_source

    source = cluster_source(environ)
    if source is None:
        raise ConfigError("tune.backend: katib needs a cluster, and none is configured (no in-cluster service account, "
                          "KUBECONFIG or ~/.kube/config); set tune.backend: local to search here")
    return KatibClient(client_configuration=client_configuration(source, "tune.backend: katib"))


def _submit(katib, body: dict, namespace: str, where: str) -> None:
    try:
        katib.create_experiment(body, namespace)
        return
    except Exception as err:  # the SDK raises bare Exception/RuntimeError; the API's answer is on the context
        api = _api_exception(err)
        if api is None or api.status != 409:
            raise _refusal(where, "create it", err) from None
    existing = _call(where, "read the existing one", katib.get_experiment, body["metadata"]["name"], namespace)
    ours = body["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    theirs = (existing.metadata.annotations or {}).get(SPEC_HASH_ANNOTATION)
    if theirs != ours:
        raise StorageError(f"{where} already exists with a different spec ({SPEC_HASH_ANNOTATION} {theirs}, this one "
                           f"{ours}); delete it (`kubectl -n {namespace} delete experiment {body['metadata']['name']}`) "
                           "or rename the search")


def _follow(katib, body, namespace, where, timeout_s, on_progress, reported, poll_s, sleep, clock):
    name = body["metadata"]["name"]
    deadline = clock() + timeout_s
    while True:
        experiment = _call(where, "read its status", katib.get_experiment, name, namespace)
        status = experiment.status
        # The trials are listed only when the status counts more finished ones than reported.
        if on_progress is not None and _finished_count(status) > len(reported):
            _report(_trials(katib, body, namespace, where), reported, on_progress, body["spec"]["maxTrialCount"])
        conditions = {c.type: c for c in (status.conditions if status and status.conditions else []) if c.status == "True"}
        if "Succeeded" in conditions:
            return experiment
        if "Failed" in conditions:
            failed = conditions["Failed"]
            raise ConfigError(f"{where} failed ({failed.reason}: {failed.message}); {_counts(experiment)}; "
                              f"see `kubectl -n {namespace} describe experiment {name}` and its trials' logs")
        if clock() >= deadline:
            raise StorageError(f"{where} did not finish within {timeout_s:g} s ({_counts(experiment)}); it is still "
                               f"running: follow it with `kubectl -n {namespace} get experiment {name}` or delete it "
                               f"with `kubectl -n {namespace} delete experiment {name}`")
        sleep(poll_s)


def _report(trials: list[TrialRecord], reported: set[str], on_progress, total: int) -> None:
    if on_progress is None:
        return
    for trial in trials:
        if trial.state in _FINISHED and trial.name not in reported:
            reported.add(trial.name)
            on_progress(trial, len(reported), total)


def _trials(katib, body: dict, namespace: str, where: str) -> list[TrialRecord]:
    name = body["metadata"]["name"]
    metric = body["spec"]["objective"]["objectiveMetricName"]
    types = {p["name"]: p["parameterType"] for p in body["spec"]["parameters"]}
    trials = _call(where, "list its trials", katib.list_trials, name, namespace)
    trials.sort(key=lambda t: (str(t.metadata.creation_timestamp or ""), t.metadata.name))
    records = []
    for number, trial in enumerate(trials):
        status = trial.status
        current = [c for c in (status.conditions if status and status.conditions else []) if c.status == "True"]
        condition = current[-1] if current else None  # Katib appends conditions in order; the last true one is now
        state = _STATES.get(condition.type, "WAITING") if condition else "WAITING"
        reason = None
        if state in ("PRUNED", "FAIL"):
            reason = f"{condition.reason}: {condition.message}" if condition.message else condition.reason
        seconds = None
        if status and status.start_time and status.completion_time:
            seconds = (status.completion_time - status.start_time).total_seconds()
        assignments = trial.spec.parameter_assignments if trial.spec else None
        records.append(TrialRecord(
            number=number,
            name=trial.metadata.name,
            state=state,
            value=_metric(status.observation if status else None, metric),
            params={a.name: _typed(a.value, types.get(a.name)) for a in assignments or []},
            seconds=seconds,
            reason=reason,
        ))
    return records


def _finished_count(status) -> int:
    if status is None:
        return 0
    return sum(getattr(status, f) or 0 for f in
               ("trials_succeeded", "trials_failed", "trials_early_stopped", "trials_killed", "trial_metrics_unavailable"))


def _counts(experiment) -> str:
    s = experiment.status
    if s is None:
        return "no trials yet"
    return (f"{s.trials or 0} trials: {s.trials_succeeded or 0} succeeded, {s.trials_failed or 0} failed, "
            f"{s.trials_early_stopped or 0} early-stopped, {s.trials_running or 0} running")


def _metric(observation, name: str) -> float | None:
    for metric in (observation.metrics or []) if observation else []:
        if metric.name == name:
            try:
                value = float(metric.latest)
            except (TypeError, ValueError):  # Katib writes "unavailable" when a trial printed no value
                return None
            return value if math.isfinite(value) else None
    return None


def _typed(value: str, kind: str | None):
    """A Katib assignment (always a string) as the search space's type; categorical values as the trial parses its flags."""
    if kind == "int":
        return int(float(value))
    if kind == "double":
        return float(value)
    return parse_value(value)


def _call(where: str, what: str, method, *args):
    try:
        return method(*args)
    except Exception as err:  # see _submit
        raise _refusal(where, what, err) from None


def _api_exception(err: BaseException):
    from kubernetes.client.rest import ApiException

    seen = err
    for _ in range(5):  # the SDK wraps once; a bound keeps a cyclic chain from looping
        if seen is None or isinstance(seen, ApiException):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _refusal(where: str, what: str, err: Exception) -> StorageError:
    api = _api_exception(err)
    if api is None:
        cause = err.__cause__ or err.__context__ or err
        first = (str(cause).splitlines() or [""])[0][:300]
        return StorageError(f"{where}: could not {what} ({type(cause).__name__}: {first})")
    from keel.components._common.kube import api_refusal

    hint = ""
    if api.status == 404 and what == "create it":
        hint = "; is Katib installed in this cluster? (or set tune.backend: local)"
    elif api.status == 403:
        hint = "; the credentials in use may not manage experiments.kubeflow.org here"
    return api_refusal(where, what, api.status, api.reason, api.body, hint)

