"""The tune stage's one definition: a Katib Experiment built from the `tune` section.

The same Experiment runs in both modes (ARCHITECTURE.md, "Two modes, one
definition"): katib.py submits it to a cluster, local.py executes it here with
the Optuna sampler matching its algorithm. So everything a trial needs is in
the Experiment itself: the search space, the budget, and a batch/v1 Job whose
one container runs `python -m keel.components.tune.trial` with the data URIs,
the config sections and one `--<param>=${trialParameters.<param>}` flag per
searched hyperparameter.

It is built with the kubeflow-katib SDK's models (the trial Job with the
kubernetes client's), so field names and nesting follow the Katib CRD, and
serialized with the SDK's own ApiClient.

Args are shell words. Katib's StdOut metrics collector rewrites the trial
container into `sh -c "<command> <args joined by spaces> 1>metrics.log 2>&1 && ..."`
(katib pkg/webhook/v1beta1/pod/utils.go, wrapWorkerContainer), so an arg
holding JSON would lose its quotes to the shell. Each arg is therefore
`shlex.quote`d where it needs it (the JSON sections; URIs with odd characters),
and a runner that does not go through a shell must `shlex.split` each arg back
into the one word it stands for. The hyperparameter flags never need quoting:
names and categorical values are checked here to be shell-safe.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass

from keel.components._common.config import ModelSection, TargetSection, TuneParameter, TuneSection
from keel.components._common.errors import ConfigError

API_VERSION, KIND = "kubeflow.org/v1beta1", "Experiment"
CONTAINER = "training-container"  # Katib's default primaryContainerName
TRIAL_COMMAND = ("python", "-m", "keel.components.tune.trial")
S3_SECRET = "keel-s3-credentials"  # the Secret manifests/ documents for the S3 credentials
# Katib's suggestion service names this experiment's Deployment and Service
# `<name>-<algorithm>` (up to "-bayesianoptimization", 21 characters) and
# Service names are DNS-1035 labels of at most 63; 40 leaves room for all.
MAX_NAME = 40
HASH_CHARS = 8
SPEC_HASH_ANNOTATION = "keel.ml/spec-hash"
# Flags the trial entry point owns; a searched parameter may not shadow one.
RESERVED_FLAGS = frozenset({"train", "validation", "transformer", "target", "model", "classes", "metric"})
# Where Katib's suggestion services accept `random_state` (katib pkg/suggestion/v1beta1:
# hyperopt for random/tpe, optuna for multivariate-tpe/grid, goptuna for cmaes,
# skopt for bayesianoptimization). Goptuna's sobol and the hyperband service take no seed.
SEEDED_ALGORITHMS = frozenset({"random", "tpe", "multivariate-tpe", "grid", "cmaes", "bayesianoptimization"})
HYPERBAND_ETA = 3

_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # estimator keyword arguments
_SHELL_SAFE = re.compile(r"^[A-Za-z0-9_.+-]+$")  # survives `sh -c` unquoted
_METRIC_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # what Katib's StdOut collector parses as a metric name
_RESTRICTED_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
_RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class TrialData:
    """What every trial reads: engineer_features' outputs, as local paths or s3:// URIs."""

    train: str
    validation: str
    transformer: str
    classes: list | None = None


def startup_trials(max_trials: int) -> int:
    """TPE's random warm-up: a third of the budget, between 2 and Optuna's default of 10."""
    return max(2, min(10, max_trials // 3))


def build_experiment(name: str, tune: TuneSection, model: ModelSection, target: TargetSection, data: TrialData, image: str):
    """The Katib Experiment that searches `tune.parameters` for `model`.

    Args:
        name: a base name; it is made DNS-safe and suffixed with a hash of the
            spec, so the same search over the same data gets the same name (a
            rerun finds its Experiment) and any change gets a new one.
        tune: the `tune` section (objective, algorithm, space, budget).
        model: the `model` section; its params are fixed for every trial,
            except the searched ones, which the trial flags override.
        target: the `target` section.
        data: the URIs every trial reads.
        image: the trial Job's image (Keel's trainer).

    Returns:
        kubeflow.katib.V1beta1Experiment, in metadata.namespace = tune.namespace.

    Raises:
        ConfigError: a parameter name, categorical value or metric name that
            cannot travel as a trial flag or metric line.
    """
    from kubeflow.katib import (
        V1beta1AlgorithmSetting,
        V1beta1AlgorithmSpec,
        V1beta1CollectorSpec,
        V1beta1EarlyStoppingSetting,
        V1beta1EarlyStoppingSpec,
        V1beta1Experiment,
        V1beta1ExperimentSpec,
        V1beta1MetricsCollectorSpec,
        V1beta1MetricStrategy,
        V1beta1ObjectiveSpec,
        V1beta1TrialTemplate,
    )
    from kubernetes.client import V1ObjectMeta

    _check_names(tune)
    objective = tune.objective
    settings = []
    if tune.algorithm in SEEDED_ALGORITHMS:
        settings.append(V1beta1AlgorithmSetting(name="random_state", value=str(tune.seed)))
    if tune.algorithm in ("tpe", "multivariate-tpe"):
        # TPE samples at random until n_startup_trials have finished (Optuna's default: 10),
        # which would make a 12-trial search mostly random: warm up on a third of the budget.
        settings.append(V1beta1AlgorithmSetting(name="n_startup_trials", value=str(startup_trials(tune.max_trials))))
    if tune.algorithm == "hyperband":
        # Katib's hyperband sets the resource parameter itself, from r_l (its
        # largest value) down by factors of eta.
        settings += [
            V1beta1AlgorithmSetting(name="resource_name", value=tune.resource),
            V1beta1AlgorithmSetting(name="r_l", value=_number(tune.parameters[tune.resource].max, "int")),
            V1beta1AlgorithmSetting(name="eta", value=str(HYPERBAND_ETA)),
        ]
    early = None
    if tune.early_stopping is not None:
        early = V1beta1EarlyStoppingSpec(
            algorithm_name=tune.early_stopping.algorithm,
            algorithm_settings=[
                V1beta1EarlyStoppingSetting(name="min_trials_required", value=str(tune.early_stopping.min_trials_required)),
                V1beta1EarlyStoppingSetting(name="start_step", value=str(tune.early_stopping.start_step)),
            ],
        )
    spec = V1beta1ExperimentSpec(
        objective=V1beta1ObjectiveSpec(
            type=objective.direction,
            objective_metric_name=objective.metric,
            goal=objective.goal,
            # A trial prints intermediate values, then the final one last: the last is its result.
            metric_strategies=[V1beta1MetricStrategy(name=objective.metric, value="latest")],
        ),
        algorithm=V1beta1AlgorithmSpec(algorithm_name=tune.algorithm, algorithm_settings=settings or None),
        early_stopping=early,
        parameters=[_parameter_spec(n, p) for n, p in tune.parameters.items()],
        max_trial_count=tune.max_trials,
        parallel_trial_count=tune.parallel_trials,
        max_failed_trial_count=tune.max_failed_trials,
        metrics_collector_spec=V1beta1MetricsCollectorSpec(collector=V1beta1CollectorSpec(kind="StdOut")),
        trial_template=V1beta1TrialTemplate(
            primary_container_name=CONTAINER,
            trial_parameters=[_trial_parameter(n, p) for n, p in tune.parameters.items()],
            trial_spec=_trial_job(tune, model, target, data, image),
        ),
    )
    spec_hash = _hash(spec)
    return V1beta1Experiment(
        api_version=API_VERSION,
        kind=KIND,
        metadata=V1ObjectMeta(
            name=experiment_name(name, spec_hash),
            namespace=tune.namespace,
            labels={"app.kubernetes.io/part-of": "keel", "app.kubernetes.io/component": "tune"},
            # katib.py compares it when the name already exists: same hash, same search.
            annotations={SPEC_HASH_ANNOTATION: spec_hash},
        ),
        spec=spec,
    )


def experiment_dict(exp) -> dict:
    """The Experiment as the Kubernetes API takes it: camelCase keys, unset fields left out."""
    from kubeflow.katib import ApiClient

    return _drop_none(ApiClient().sanitize_for_serialization(exp))


def experiment_yaml(exp) -> str:
    """The Experiment as YAML for `kubectl apply -f` (long args kept on one line each)."""
    import yaml

    return yaml.safe_dump(experiment_dict(exp), sort_keys=False, width=10_000)


def emit(exp, path: str) -> str:
    """Writes the Experiment YAML to a local path or s3:// URI, atomically; returns its content hash."""
    from keel.components._common import storage

    data = experiment_yaml(exp).encode()
    storage.write_bytes(path, data, content_type="application/yaml")
    return "sha256:" + hashlib.sha256(data).hexdigest()


def experiment_name(base: str, spec_hash: str) -> str:
    """`base` as a Katib Experiment name (DNS-1035 label, at most 40 characters) ending in a short spec hash.

    Katib wants a lower-case letter first; a base that has none gets a `tune-` prefix.
    """
    digest = spec_hash.removeprefix("sha256:")[:HASH_CHARS]
    stem = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", base.lower())).strip("-")
    if not stem[:1].isalpha():
        stem = f"tune-{stem}".rstrip("-")
    stem = stem[: MAX_NAME - HASH_CHARS - 1].rstrip("-")
    return f"{stem}-{digest}"


def trial_flag(name: str) -> str:
    """The trial arg that carries one searched parameter; Katib substitutes the placeholder."""
    return f"--{name}=${{trialParameters.{name}}}"


def _check_names(tune: TuneSection) -> None:
    if not _METRIC_NAME.match(tune.objective.metric):
        raise ConfigError(f"tune.objective.metric: {tune.objective.metric!r} cannot be a Katib metric name; "
                          "use letters, digits, '_' and '-' (e.g. roc_auc)")
    for name, param in tune.parameters.items():
        if not _PARAM_NAME.match(name):
            raise ConfigError(f"tune.parameters.{name}: not a hyperparameter name; use the estimator's keyword "
                              "(letters, digits and '_', e.g. learning_rate)")
        if name in RESERVED_FLAGS:
            raise ConfigError(f"tune.parameters.{name}: the trial already takes --{name}; it cannot be searched")
        for value in param.values or []:
            if not _SHELL_SAFE.match(str(value)):
                raise ConfigError(f"tune.parameters.{name}.values: {value!r} cannot be passed as a trial flag "
                                  "(Katib runs the trial through a shell); use letters, digits, '_', '.', '+' and '-'")


def _number(value: float, kind: str) -> str:
    # Katib parses feasibleSpace strings with int() for int parameters, so "50.0" would fail there.
    return str(int(value)) if kind == "int" else repr(float(value))


def _parameter_spec(name: str, param: TuneParameter):
    from kubeflow.katib import V1beta1FeasibleSpace, V1beta1ParameterSpec

    if param.type == "categorical":
        space = V1beta1FeasibleSpace(list=[str(v) for v in param.values])
    else:
        space = V1beta1FeasibleSpace(
            min=_number(param.min, param.type),
            max=_number(param.max, param.type),
            step=None if param.step is None else _number(param.step, param.type),
            distribution="logUniform" if param.log else "uniform",
        )
    return V1beta1ParameterSpec(name=name, parameter_type=param.type, feasible_space=space)


def _trial_parameter(name: str, param: TuneParameter):
    from kubeflow.katib import V1beta1TrialParameterSpec

    if param.type == "categorical":
        where = "one of " + ", ".join(str(v) for v in param.values)
    else:
        where = f"{_number(param.min, param.type)}..{_number(param.max, param.type)}"
        where += " (log scale)" if param.log else ""
        where += f" step {_number(param.step, param.type)}" if param.step is not None else ""
    return V1beta1TrialParameterSpec(name=name, reference=name, description=f"model.params.{name}: {param.type} {where}")


def _trial_args(tune: TuneSection, model: ModelSection, target: TargetSection, data: TrialData) -> list[str]:
    # The searched parameters come only from their flags, so the fixed model.params show what is fixed.
    fixed = {**model.model_dump(mode="json"), "params": {k: v for k, v in model.params.items() if k not in tune.parameters}}
    values = {
        "train": data.train,
        "validation": data.validation,
        "transformer": data.transformer,
        "target": _json(target.model_dump(mode="json")),
        "model": _json(fixed),
        "classes": None if data.classes is None else _json(list(data.classes)),
        "metric": tune.objective.metric,
    }
    # Only the value is quoted (`--target='{...}'`): the same shell word, easier to read.
    args = [f"--{flag}={shlex.quote(value)}" for flag, value in values.items() if value is not None]
    return args + [trial_flag(name) for name in tune.parameters]


def _trial_job(tune: TuneSection, model: ModelSection, target: TargetSection, data: TrialData, image: str) -> dict:
    from kubernetes.client import (
        ApiClient,
        V1Container,
        V1EnvVar,
        V1EnvVarSource,
        V1Job,
        V1JobSpec,
        V1ObjectMeta,
        V1PodSpec,
        V1PodTemplateSpec,
        V1SecretKeySelector,
    )

    def secret(variable: str, optional: bool = False) -> V1EnvVar:
        return V1EnvVar(name=variable, value_from=V1EnvVarSource(
            secret_key_ref=V1SecretKeySelector(name=S3_SECRET, key=variable, optional=optional or None)))

    job = V1Job(
        api_version="batch/v1",
        kind="Job",
        spec=V1JobSpec(
            # A trial is deterministic for its parameters: a retry would fail the same way, and
            # Katib already counts failures against maxFailedTrialCount.
            backoff_limit=0,
            template=V1PodTemplateSpec(
                metadata=V1ObjectMeta(
                    labels={"keel.ml/role": "tune-trial"},
                    # With an Istio sidecar a Job never completes (the proxy keeps running);
                    # Katib's own examples turn injection off for trials.
                    annotations={"sidecar.istio.io/inject": "false"},
                ),
                spec=V1PodSpec(
                    restart_policy="Never",
                    # A trial reads S3 and prints metrics; it never talks to the Kubernetes API.
                    automount_service_account_token=False,
                    security_context=dict(_RESTRICTED_POD),
                    containers=[
                        V1Container(
                            name=CONTAINER,
                            image=image,
                            command=list(TRIAL_COMMAND),
                            args=_trial_args(tune, model, target, data),
                            env=[
                                # The endpoint is optional in the Secret: without it a trial reading
                                # s3:// fails at once with keel's "no endpoint is set" line, instead
                                # of the pod waiting forever in CreateContainerConfigError.
                                secret("AWS_ENDPOINT_URL", optional=True),
                                secret("AWS_ACCESS_KEY_ID"),
                                secret("AWS_SECRET_ACCESS_KEY"),
                            ],
                            security_context=dict(_RESTRICTED_CONTAINER),
                        )
                    ],
                ),
            ),
        ),
    )
    return ApiClient().sanitize_for_serialization(job)


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _hash(spec) -> str:
    from kubeflow.katib import ApiClient

    return "sha256:" + hashlib.sha256(_json(_drop_none(ApiClient().sanitize_for_serialization(spec))).encode()).hexdigest()


def _drop_none(value):
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value
