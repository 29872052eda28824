"""The Katib Experiment (experiment.py) and the cluster backend that submits and follows it (katib.py).

The Experiments are compared with golden files, one per Katib algorithm, and
round-tripped through the kubeflow-katib SDK's own models. Review a change to
them, then rewrite them with:

    KEEL_UPDATE_GOLDEN=1 .venv/bin/python -m pytest components/tune/tests/test_experiment.py -p no:cacheprovider

No Kubernetes API server can run on this machine (no cluster, no envtest
binaries), so the backend is tested against a small HTTP server that speaks
the custom-object calls the real KatibClient makes (create, get, list) and
records them. Everything else is real: the SDK's models and client, the
kubernetes client and its kubeconfig loading. Waiting uses a fake clock.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from keel.components._common.config import KATIB_ALGORITHMS, ModelSection, TargetSection, TuneSection
from keel.components._common.errors import ConfigError, StorageError
from keel.components.tune.experiment import (
    SPEC_HASH_ANNOTATION,
    TrialData,
    build_experiment,
    emit,
    experiment_dict,
    experiment_name,
    experiment_yaml,
)
from keel.components.tune.katib import grid_points, katib_problems, run_on_katib

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("KEEL_UPDATE_GOLDEN") == "1"
IMAGE = "registry.example.com/keel/keel-base:1.0.0"
DATA = TrialData(
    train="s3://keel/runs/loans-high-risk-tuned/engineer_features/train_features",
    validation="s3://keel/runs/loans-high-risk-tuned/engineer_features/validation_features",
    transformer="s3://keel/runs/loans-high-risk-tuned/engineer_features/transformer",
    classes=["grade_a_to_c", "grade_d_to_g"],
)
TARGET = TargetSection(column="grade", task="binary", positive_values=["D", "E", "F", "G"], labels=["grade_a_to_c", "grade_d_to_g"])
MODEL = ModelSection(family="gradient_boosting", params={"early_stopping": False}, seed=42)
LEARNING_RATE = {"type": "double", "min": 0.01, "max": 0.3, "log": True}
MAX_ITER = {"type": "int", "min": 50, "max": 300, "step": 50}  # the hyperband resource
MAX_LEAF_NODES = {"type": "categorical", "values": [15, 31, 63]}
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
PLACEHOLDER = re.compile(r"\$\{trialParameters\.([^}]*)\}")


def tune_section(algorithm: str) -> TuneSection:
    """The fixed search of the golden files: gradient boosting's learning rate, iterations and leaves."""
    raw = {"algorithm": algorithm, "max_trials": 12, "parallel_trials": 2, "max_failed_trials": 3, "seed": 42,
           "parameters": {"learning_rate": LEARNING_RATE, "max_iter": MAX_ITER, "max_leaf_nodes": MAX_LEAF_NODES}}
    if algorithm in ("cmaes", "sobol", "bayesianoptimization"):
        del raw["parameters"]["max_leaf_nodes"]  # numeric spaces only (config refuses categorical)
    if algorithm == "grid":
        # Katib's grid spaces a stepped double linearly (numpy.arange), and Optuna refuses a
        # step on a log scale, so the grid's learning rate is linear: 6 x 6 x 3 = 108 points.
        raw["parameters"]["learning_rate"] = {"type": "double", "min": 0.05, "max": 0.3, "step": 0.05}
    if algorithm == "hyperband":
        # Katib's hyperband starts 3**5 = 243 trials at once when max_iter goes up to 300.
        raw.update(resource="max_iter", parallel_trials=243, max_trials=243)
    if algorithm == "tpe":
        raw["early_stopping"] = {"algorithm": "medianstop", "min_trials_required": 3, "start_step": 4}
    return TuneSection.parse(raw, "tune")


def build(algorithm: str = "tpe", tune: TuneSection | None = None, data: TrialData = DATA, model: ModelSection = MODEL,
          target: TargetSection = TARGET, name: str = "keel-gradient_boosting"):
    return build_experiment(name, tune or tune_section(algorithm), model, target, data, IMAGE)


def container(spec: dict) -> dict:
    (only,) = spec["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"]
    return only


# -- the Experiment ----------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", KATIB_ALGORITHMS)
def test_experiment_matches_its_golden_file(algorithm):
    exp = build(algorithm)
    path = GOLDEN / f"{algorithm}.yaml"
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"# The Katib Experiment Keel builds for algorithm {algorithm} (components/tune/tests/test_experiment.py;\n"
                        "# rewrite with KEEL_UPDATE_GOLDEN=1 after reviewing a change).\n" + experiment_yaml(exp))
    assert path.is_file(), f"no golden file {path.name}; run with KEEL_UPDATE_GOLDEN=1"
    assert experiment_dict(exp) == yaml.safe_load(path.read_text()), (
        f"the {algorithm} Experiment differs from tests/golden/{algorithm}.yaml; review, then KEEL_UPDATE_GOLDEN=1")


def test_there_is_one_golden_file_per_katib_algorithm():
    assert {p.stem for p in GOLDEN.glob("*.yaml")} == set(KATIB_ALGORITHMS)


@pytest.mark.parametrize("algorithm", KATIB_ALGORITHMS)
def test_golden_round_trips_through_the_katib_sdk_models(algorithm):
    from kubeflow.katib import ApiClient, V1beta1Experiment
    from kubeflow.katib.utils.utils import FakeResponse

    golden = yaml.safe_load((GOLDEN / f"{algorithm}.yaml").read_text())
    model = ApiClient().deserialize(FakeResponse(golden), V1beta1Experiment)
    assert isinstance(model, V1beta1Experiment)
    assert model.spec.algorithm.algorithm_name == algorithm
    assert all(isinstance(p.feasible_space.list or p.feasible_space.min, (list, str)) for p in model.spec.parameters)
    assert experiment_dict(model) == golden


@pytest.mark.parametrize("algorithm", KATIB_ALGORITHMS)
def test_golden_passes_the_rules_katib_enforces(algorithm):
    spec = yaml.safe_load((GOLDEN / f"{algorithm}.yaml").read_text())
    assert katib_problems(spec) == []
    name = spec["metadata"]["name"]
    assert DNS_LABEL.match(name) and len(name) <= 40
    # Katib's validating webhook: trialParameters and the template's placeholders match one to one,
    # and every reference is a searched parameter.
    template = json.dumps(spec["spec"]["trialTemplate"]["trialSpec"])
    declared = [p["name"] for p in spec["spec"]["trialTemplate"]["trialParameters"]]
    assert sorted(set(PLACEHOLDER.findall(template))) == sorted(declared)
    searched = [p["name"] for p in spec["spec"]["parameters"]]
    assert [p["reference"] for p in spec["spec"]["trialTemplate"]["trialParameters"]] == searched
    assert container(spec)["name"] == spec["spec"]["trialTemplate"]["primaryContainerName"]
    job = spec["spec"]["trialTemplate"]["trialSpec"]
    assert "name" not in job.get("metadata", {}) and "namespace" not in job.get("metadata", {})


def test_experiment_follows_the_tune_section():
    spec = experiment_dict(build("tpe"))["spec"]
    assert spec["objective"] == {"type": "maximize", "objectiveMetricName": "roc_auc",
                                 "metricStrategies": [{"name": "roc_auc", "value": "latest"}]}
    assert spec["algorithm"] == {"algorithmName": "tpe", "algorithmSettings": [
        {"name": "random_state", "value": "42"},
        {"name": "n_startup_trials", "value": str(max(2, min(10, spec["maxTrialCount"] // 3)))},  # a third of the budget
    ]}
    assert spec["earlyStopping"] == {"algorithmName": "medianstop", "algorithmSettings": [
        {"name": "min_trials_required", "value": "3"}, {"name": "start_step", "value": "4"}]}
    assert (spec["maxTrialCount"], spec["parallelTrialCount"], spec["maxFailedTrialCount"]) == (12, 2, 3)
    assert spec["metricsCollectorSpec"] == {"collector": {"kind": "StdOut"}}
    assert spec["parameters"] == [
        {"name": "learning_rate", "parameterType": "double",
         "feasibleSpace": {"min": "0.01", "max": "0.3", "distribution": "logUniform"}},
        # Katib reads int bounds with int(): "50", never "50.0".
        {"name": "max_iter", "parameterType": "int",
         "feasibleSpace": {"min": "50", "max": "300", "step": "50", "distribution": "uniform"}},
        {"name": "max_leaf_nodes", "parameterType": "categorical", "feasibleSpace": {"list": ["15", "31", "63"]}},
    ]


def test_a_goal_and_minimize_reach_the_objective():
    raw = {"objective": {"metric": "rmse", "direction": "minimize", "goal": 0.25}, "algorithm": "random",
           "parameters": {"max_iter": MAX_ITER}}
    objective = experiment_dict(build(tune=TuneSection.parse(raw, "tune")))["spec"]["objective"]
    assert (objective["type"], objective["objectiveMetricName"], objective["goal"]) == ("minimize", "rmse", 0.25)
    assert "earlyStopping" not in experiment_dict(build("random"))["spec"]


@pytest.mark.parametrize("algorithm, settings", [
    ("sobol", None),  # goptuna's sobol takes no seed
    ("cmaes", [{"name": "random_state", "value": "42"}]),
    ("hyperband", [{"name": "resource_name", "value": "max_iter"}, {"name": "r_l", "value": "300"}, {"name": "eta", "value": "3"}]),
])
def test_algorithm_settings(algorithm, settings):
    assert experiment_dict(build(algorithm))["spec"]["algorithm"].get("algorithmSettings") == settings


def test_every_searched_parameter_is_a_trial_flag_with_its_placeholder():
    spec = experiment_dict(build("tpe"))
    args = container(spec)["args"]
    for name in ("learning_rate", "max_iter", "max_leaf_nodes"):
        assert [a for a in args if a.startswith(f"--{name}=")] == [f"--{name}=${{trialParameters.{name}}}"]
    assert container(spec)["command"] == ["python", "-m", "keel.components.tune.trial"]
    assert spec["spec"]["trialTemplate"]["trialParameters"][0] == {
        "name": "learning_rate", "reference": "learning_rate", "description": "model.params.learning_rate: double 0.01..0.3 (log scale)"}


def test_the_model_flag_holds_only_the_fixed_params():
    model = ModelSection(family="gradient_boosting", params={"early_stopping": False, "learning_rate": 0.1})
    words = dict(shlex.split(a)[0][2:].split("=", 1) for a in container(experiment_dict(build(model=model)))["args"])
    assert json.loads(words["model"]) == {"family": "gradient_boosting", "params": {"early_stopping": False}, "seed": 42}
    assert json.loads(words["target"]) == TARGET.model_dump(mode="json")
    assert json.loads(words["classes"]) == DATA.classes
    assert (words["train"], words["metric"]) == (DATA.train, "roc_auc")
    no_classes = container(experiment_dict(build(data=TrialData(DATA.train, DATA.validation, DATA.transformer))))["args"]
    assert not any(a.startswith("--classes") for a in no_classes)


def test_args_survive_the_shell_katibs_metrics_collector_runs_them_through(tmp_path):
    """Katib runs `sh -c "<command> <args joined by spaces> 1>metrics.log 2>&1 && ..."`: every arg must come out whole."""
    target = TargetSection(column="grade", positive_values=["D", "E"], labels=["grade a to c", "people's grades"])
    data = TrialData(str(tmp_path / "my runs" / "train features"), "s3://keel/v*l", "s3://keel/t[1]", ["a b", "c"])
    args = container(experiment_dict(build(target=target, data=data)))["args"]
    values = {"learning_rate": "0.05", "max_iter": "200", "max_leaf_nodes": "31"}  # as Katib substitutes them
    args = [PLACEHOLDER.sub(lambda m: values[m.group(1)], a) for a in args]
    echo = f"{shlex.quote(sys.executable)} -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"
    out = subprocess.run(["sh", "-c", " ".join([echo, *args])], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    received = json.loads(out)
    assert received == [shlex.split(a)[0] for a in args]  # what a runner without a shell must do
    flags = dict(a[2:].split("=", 1) for a in received)
    assert json.loads(flags["target"]) == target.model_dump(mode="json")
    assert (flags["train"], flags["validation"], flags["transformer"]) == (data.train, data.validation, data.transformer)
    assert json.loads(flags["classes"]) == ["a b", "c"]
    assert (flags["learning_rate"], flags["max_iter"], flags["max_leaf_nodes"]) == ("0.05", "200", "31")


def test_credentials_come_only_from_the_secret(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-NOT-IN-YAML")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-value-not-in-yaml")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.example:9000")
    exp = build("tpe")
    text = experiment_yaml(exp)
    assert "AKIA-NOT-IN-YAML" not in text and "secret-value-not-in-yaml" not in text and "minio.example" not in text
    env = container(experiment_dict(exp))["env"]
    assert [e["name"] for e in env] == ["AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    for var in env:
        assert set(var) == {"name", "valueFrom"}
        assert var["valueFrom"]["secretKeyRef"]["name"] == "keel-s3-credentials"
        assert var["valueFrom"]["secretKeyRef"]["key"] == var["name"]


def test_trial_pod_meets_pod_security_restricted():
    pod = experiment_dict(build("tpe"))["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    context = pod["spec"]["containers"][0]["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsNonRoot"] is True and context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}


def test_the_trial_job_is_a_valid_batch_job():
    from keel.components._common.k8s_schema import validate_manifest

    job = experiment_dict(build("tpe"))["spec"]["trialTemplate"]["trialSpec"]
    assert (job["apiVersion"], job["kind"], job["spec"]["backoffLimit"]) == ("batch/v1", "Job", 0)
    # Katib names each trial's Job; the template has none (its webhook refuses one).
    assert validate_manifest({**job, "metadata": {**job.get("metadata", {}), "name": "trial-1"}}) == []


@pytest.mark.parametrize("base", ["keel-gradient_boosting", "Keel Gradient Boosting!", "7-day churn", "", "---",
                                  "a" * 100, "x__y..z", "UPPER"])
def test_names_are_dns_labels_katib_accepts(base):
    name = experiment_dict(build(name=base))["metadata"]["name"]
    assert DNS_LABEL.match(name) and len(name) <= 40, name
    assert name[0].isalpha()


def test_the_name_is_unique_per_data_and_stable_per_search():
    first = experiment_dict(build("tpe"))
    assert first == experiment_dict(build("tpe"))
    assert first["metadata"]["name"].startswith("keel-gradient-boosting-")
    assert first["metadata"]["annotations"][SPEC_HASH_ANNOTATION].startswith("sha256:")
    other_data = TrialData(DATA.train.replace("loans", "loans2"), DATA.validation, DATA.transformer, DATA.classes)
    other_seed = TuneSection.parse({**tune_section("tpe").model_dump(), "seed": 7}, "tune")
    names = {first["metadata"]["name"], experiment_dict(build(data=other_data))["metadata"]["name"],
             experiment_dict(build(tune=other_seed))["metadata"]["name"]}
    assert len(names) == 3
    assert experiment_name("loans", "sha256:0123456789abcdef") == "loans-01234567"


@pytest.mark.parametrize("parameters, metric, field", [
    ({"max-iter": MAX_ITER}, "roc_auc", "tune.parameters.max-iter: not a hyperparameter name"),
    ({"model": MAX_ITER}, "roc_auc", "tune.parameters.model: the trial already takes --model"),
    ({"loss": {"type": "categorical", "values": ["log loss", "x"]}}, "roc_auc", "tune.parameters.loss.values: 'log loss'"),
    ({"loss": {"type": "categorical", "values": ["$(reboot)", "x"]}}, "roc_auc", "tune.parameters.loss.values"),
    ({"max_iter": MAX_ITER}, "roc auc", "tune.objective.metric: 'roc auc'"),
])
def test_what_cannot_travel_as_a_flag_or_metric_is_a_config_error(parameters, metric, field):
    tune = TuneSection.parse({"parameters": parameters, "objective": {"metric": metric}}, "tune")
    with pytest.raises(ConfigError) as err:
        build(tune=tune)
    assert str(err.value).startswith(field) and "\n" not in str(err.value)


def test_emit_writes_the_yaml_atomically(tmp_path, monkeypatch):
    exp = build("grid")
    path = tmp_path / "out" / "experiment.yaml"
    digest = emit(exp, str(path))
    assert path.read_text() == experiment_yaml(exp)
    import hashlib

    assert digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()

    # A write that fails half-way leaves the old file and no temporary one.
    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        emit(build("random"), str(path))
    assert path.read_text() == experiment_yaml(exp)
    assert sorted(p.name for p in path.parent.iterdir()) == ["experiment.yaml"]


# -- what Katib would refuse, checked before anything is sent -----------------------------------------

@pytest.mark.parametrize("raw, problem", [
    ({"algorithm": "hyperband", "resource": "max_iter", "parameters": {"max_iter": MAX_ITER}, "parallel_trials": 2},
     "tune.parallel_trials: Katib's hyperband starts 243 trials at once when max_iter goes up to 300"),
    ({"algorithm": "cmaes", "parameters": {"max_iter": MAX_ITER}}, "tune.parameters: Katib's cmaes needs at least two"),
    ({"algorithm": "grid", "max_trials": 40, "parameters": {"max_iter": MAX_ITER, "max_leaf_nodes": MAX_LEAF_NODES}},
     "tune.max_trials (40) is more than the 18 points of the grid"),
    ({"parameters": {"max_iter": MAX_ITER}, "max_trials": 2, "parallel_trials": 1, "max_failed_trials": 3},
     "tune.max_failed_trials (3) is more than tune.max_trials (2)"),
])
def test_katib_problems_name_the_tune_field(raw, problem):
    (only,) = katib_problems(experiment_dict(build(tune=TuneSection.parse(raw, "tune"))))
    assert only.startswith(problem)


def test_grid_points_count_as_katib_enumerates_them():
    params = experiment_dict(build("grid"))["spec"]["parameters"]
    assert grid_points(params) == 6 * 6 * 3
    # numpy.arange overshoots on floats; Katib drops a last point above max, as must we.
    assert grid_points([{"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0.01", "max": "0.3", "step": "0.05"}}]) == 6


# -- submitting and following, against a recording stand-in for the API server ------------------------

EXPERIMENTS = "/apis/kubeflow.org/v1beta1/namespaces/team-a/experiments"
TRIALS = "/apis/kubeflow.org/v1beta1/namespaces/team-a/trials"


@pytest.fixture
def api_server(kube_api):
    return kube_api


class FakeClock:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def submitted(namespace="team-a", algorithm="tpe"):
    body = experiment_dict(build(algorithm))
    body["metadata"]["namespace"] = namespace
    return body


def with_status(body, condition, succeeded=0, failed=0, running=0, optimal=None, reason="", message=""):
    conditions = [{"type": "Created", "status": "True", "reason": "ExperimentCreated"},
                  {"type": "Running", "status": "False" if condition != "Running" else "True", "reason": "ExperimentRunning"}]
    if condition != "Running":
        conditions.append({"type": condition, "status": "True", "reason": reason, "message": message})
    status = {"conditions": conditions, "trials": succeeded + failed + running, "trialsSucceeded": succeeded,
              "trialsFailed": failed, "trialsRunning": running}
    if optimal:
        status["currentOptimalTrial"] = optimal
    return {**body, "status": status}


def trial(name, params, condition, value=None, second=0):
    status = {"conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "True" if condition == "Running" else "False"}]}
    if condition != "Running":
        status["conditions"].append({"type": condition, "status": "True", "reason": f"Trial{condition}",
                                     "message": "" if condition == "Succeeded" else "Metrics are not available"})
        status["startTime"], status["completionTime"] = f"2026-11-26T10:00:0{second}Z", f"2026-11-26T10:01:0{second}Z"
    if value is not None:
        status["observation"] = {"metrics": [{"name": "roc_auc", "latest": value, "min": "0.5", "max": value}]}
    return {"apiVersion": "kubeflow.org/v1beta1", "kind": "Trial",
            "metadata": {"name": name, "namespace": "team-a", "creationTimestamp": f"2026-11-26T10:00:0{second}Z"},
            "spec": {"parameterAssignments": [{"name": k, "value": v} for k, v in params.items()]},
            "status": status}


A = {"learning_rate": "0.05", "max_iter": "200", "max_leaf_nodes": "31"}
B = {"learning_rate": "0.2", "max_iter": "50", "max_leaf_nodes": "15"}
C = {"learning_rate": "0.011", "max_iter": "300", "max_leaf_nodes": "63"}


def test_a_succeeded_experiment_yields_its_optimal_trial(api_server):
    body = submitted()
    name = body["metadata"]["name"]
    trials_path = f"{TRIALS}?labelSelector=katib.kubeflow.org/experiment={name}"
    optimal = {"bestTrialName": f"{name}-a", "parameterAssignments": [{"name": k, "value": v} for k, v in A.items()],
               "observation": {"metrics": [{"name": "roc_auc", "latest": "0.7912", "min": "0.71", "max": "0.7912"}]}}
    first = [trial(f"{name}-a", A, "Succeeded", "0.7912", 1), trial(f"{name}-b", B, "Running", None, 2)]
    final = [trial(f"{name}-a", A, "Succeeded", "0.7912", 1), trial(f"{name}-b", B, "Succeeded", "0.7501", 2),
             trial(f"{name}-c", C, "Failed", None, 3)]
    done = with_status(body, "Succeeded", succeeded=2, failed=1, optimal=optimal, reason="ExperimentMaxTrialsReached")
    server, env = api_server(
        ("POST", EXPERIMENTS, 201, None),
        ("GET", f"{EXPERIMENTS}/{name}", 200, with_status(body, "Running", succeeded=1, running=1)),
        ("GET", trials_path, 200, {"items": first}),
        ("GET", f"{EXPERIMENTS}/{name}", 200, done),
        ("GET", trials_path, 200, {"items": final}),
        ("GET", f"{EXPERIMENTS}/{name}", 200, done),  # get_optimal_hyperparameters
        ("GET", trials_path, 200, {"items": final}),
    )
    clock, progress = FakeClock(), []
    result = run_on_katib(build("tpe"), "team-a", 3600, lambda t, n, total: progress.append((t.name, t.state, t.value, n, total)),
                          environ=env, poll_s=30, sleep=clock.sleep, clock=clock)
    method, path, _, sent = server.calls[0]
    assert (method, path) == ("POST", EXPERIMENTS) and sent == body  # exactly the Experiment, in the asked namespace
    assert [c[:2] for c in server.calls[1:]] == [("GET", f"{EXPERIMENTS}/{name}"), ("GET", trials_path)] * 3
    assert result.best_params == {"learning_rate": 0.05, "max_iter": 200, "max_leaf_nodes": 31}
    assert type(result.best_params["max_iter"]) is int and result.best_value == 0.7912
    assert progress == [(f"{name}-a", "COMPLETE", 0.7912, 1, 12), (f"{name}-b", "COMPLETE", 0.7501, 2, 12),
                        (f"{name}-c", "FAIL", None, 3, 12)]
    assert clock.sleeps == [30]
    assert [(t["number"], t["state"], t["value"], t["seconds"]) for t in result.trials] == [
        (0, "COMPLETE", 0.7912, 60.0), (1, "COMPLETE", 0.7501, 60.0), (2, "FAIL", None, 60.0)]
    assert result.trials[2]["reason"] == "TrialFailed: Metrics are not available"
    assert result.trials[1]["params"] == {"learning_rate": 0.2, "max_iter": 50, "max_leaf_nodes": 15}


def test_a_refused_experiment_is_one_line_with_the_api_message(api_server):
    server, env = api_server(("POST", EXPERIMENTS, 403, {"message": 'admission webhook "validator.experiment.katib.kubeflow.org" denied the request'}))
    with pytest.raises(StorageError) as err:
        run_on_katib(build("tpe"), "team-a", 60, environ=env, sleep=pytest.fail)
    message = str(err.value)
    assert re.match(r"Katib Experiment team-a/keel-gradient-boosting-[0-9a-f]{8}: the API server refused to create it "
                    r"\(403 Forbidden\): admission webhook .*denied the request", message)
    assert "\n" not in message and len(server.calls) == 1


def test_a_cluster_without_katib_says_so(api_server):
    server, env = api_server(("POST", EXPERIMENTS, 404, {"message": "the server could not find the requested resource"}))
    with pytest.raises(StorageError, match=r"\(404 Not Found\): the server could not find .*is Katib installed"):
        run_on_katib(build("tpe"), "team-a", 60, environ=env, sleep=pytest.fail)


def test_a_failed_experiment_is_a_config_error_with_katibs_reason(api_server):
    body = submitted()
    name = body["metadata"]["name"]
    server, env = api_server(
        ("POST", EXPERIMENTS, 201, None),
        ("GET", f"{EXPERIMENTS}/{name}", 200, with_status(body, "Failed", failed=3, reason="ExperimentMaxFailedTrialsReached",
                                                          message="Experiment has failed because max failed count has reached")),
    )
    with pytest.raises(ConfigError, match=r"team-a/.* failed \(ExperimentMaxFailedTrialsReached: Experiment has failed because "
                                          r"max failed count has reached\); 3 trials: 0 succeeded, 3 failed"):
        run_on_katib(build("tpe"), "team-a", 60, environ=env, sleep=pytest.fail)


def test_an_experiment_that_runs_past_the_timeout_is_left_running_and_named(api_server):
    body = submitted()
    name = body["metadata"]["name"]
    running = with_status(body, "Running", succeeded=0, running=2)
    server, env = api_server(("POST", EXPERIMENTS, 201, None), *[("GET", f"{EXPERIMENTS}/{name}", 200, running)] * 4)
    clock = FakeClock()
    with pytest.raises(StorageError, match=rf"did not finish within 30 s \(2 trials: 0 succeeded.*2 running\); it is still running: "
                                           rf".*kubectl -n team-a delete experiment {name}"):
        run_on_katib(build("tpe"), "team-a", 30, environ=env, poll_s=10, sleep=clock.sleep, clock=clock)
    assert clock.sleeps == [10, 10, 10] and len(server.calls) == 5  # no DELETE: the search is the user's to keep or stop


def test_the_same_search_already_submitted_is_followed_not_run_twice(api_server):
    body = submitted()
    name = body["metadata"]["name"]
    trials_path = f"{TRIALS}?labelSelector=katib.kubeflow.org/experiment={name}"
    optimal = {"parameterAssignments": [{"name": k, "value": v} for k, v in B.items()],
               "observation": {"metrics": [{"name": "roc_auc", "latest": "0.75"}]}}
    done = with_status(body, "Succeeded", succeeded=1, optimal=optimal)
    server, env = api_server(
        ("POST", EXPERIMENTS, 409, {"message": f'experiments.kubeflow.org "{name}" already exists'}),
        ("GET", f"{EXPERIMENTS}/{name}", 200, done),
        ("GET", f"{EXPERIMENTS}/{name}", 200, done),
        ("GET", f"{EXPERIMENTS}/{name}", 200, done),
        ("GET", trials_path, 200, {"items": [trial(f"{name}-b", B, "Succeeded", "0.75")]}),
    )
    result = run_on_katib(build("tpe"), "team-a", 60, environ=env, sleep=pytest.fail)
    assert result.best_params == {"learning_rate": 0.2, "max_iter": 50, "max_leaf_nodes": 15} and result.best_value == 0.75
    assert [c[0] for c in server.calls] == ["POST", "GET", "GET", "GET", "GET"]


def test_a_different_experiment_under_the_same_name_is_not_adopted(api_server):
    body = submitted()
    name = body["metadata"]["name"]
    theirs = {**body, "metadata": {**body["metadata"], "annotations": {SPEC_HASH_ANNOTATION: "sha256:other"}}}
    server, env = api_server(("POST", EXPERIMENTS, 409, {"message": "already exists"}),
                             ("GET", f"{EXPERIMENTS}/{name}", 200, theirs))
    with pytest.raises(StorageError, match=rf"already exists with a different spec .*kubectl -n team-a delete experiment {name}"):
        run_on_katib(build("tpe"), "team-a", 60, environ=env, sleep=pytest.fail)


def test_a_search_katib_would_refuse_sends_nothing(api_server):
    server, env = api_server()
    tune = TuneSection.parse({"algorithm": "hyperband", "resource": "max_iter", "parameters": {"max_iter": MAX_ITER}}, "tune")
    with pytest.raises(ConfigError, match="tune.parallel_trials: Katib's hyperband starts 243 trials"):
        run_on_katib(build(tune=tune), "team-a", 60, environ=env, sleep=pytest.fail)
    assert server.calls == []


def test_without_a_cluster_it_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="tune.backend: katib needs a cluster, and none is configured"):
        run_on_katib(build("tpe"), "team-a", 60, environ={"HOME": str(tmp_path)}, sleep=pytest.fail)


def test_an_unreachable_api_server_is_a_storage_error(tmp_path, api_server):
    server, env = api_server()
    server.close()  # nothing listens on that port any more
    with pytest.raises(StorageError, match=r"team-a/.*: could not create it \(\w+"):
        run_on_katib(build("tpe"), "team-a", 60, environ=env, sleep=pytest.fail)


def test_unreadable_credentials_are_a_config_error(tmp_path):
    (tmp_path / "kubeconfig").write_text("kind: Config\nclusters: []\n")
    env = {"KUBECONFIG": str(tmp_path / "kubeconfig"), "HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match="tune.backend: katib: cannot load Kubernetes credentials from KUBECONFIG="):
        run_on_katib(build("tpe"), "team-a", 60, environ=env, sleep=pytest.fail)
