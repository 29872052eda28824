"""Reading a Katib Experiment for the local backend: the search space, algorithm, budget and trial command.

`Plan.read(experiment)` turns the camelCase Experiment dict into what
local.py needs to run it with Optuna, and refuses, naming the field, anything
the local backend cannot run the way Katib would.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import math
import re
import shlex
import sys
from dataclasses import dataclass

from keel.components._common.errors import ConfigError
from keel.components.tune.trial import parse_value

# Katib's StdOut collector default filter (pkg/metricscollector/v1beta1/common/const.go).
KATIB_METRICS_FORMAT = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
_PLACEHOLDER = re.compile(r"\$\{trialParameters\.([^}]*)\}")
_ANY_PLACEHOLDER = re.compile(r"\$\{[^}]*\}")
_COUNTS = ("maxTrialCount", "parallelTrialCount", "maxFailedTrialCount")
_SETTINGS = {  # Katib algorithmSettings each local sampler honours
    "random": ("random_state",),
    "tpe": ("random_state", "n_startup_trials", "n_ei_candidates"),
    "multivariate-tpe": ("random_state", "n_startup_trials", "n_ei_candidates"),
    "cmaes": ("random_state", "sigma"),
    "sobol": ("random_state",),
    "grid": ("random_state",),
    "bayesianoptimization": ("random_state", "n_initial_points"),
    "hyperband": ("random_state", "resource_name", "r_l", "eta"),
}


@dataclass
class _Param:
    name: str
    distribution: object  # an optuna distribution
    grid: list | None  # values for the grid sampler
    texts: dict | None = None  # categorical value -> the string Katib would substitute


@dataclass
class Plan:
    """What run_local needs from the Experiment dict, checked once."""

    name: str
    direction: str
    metric: str
    goal: float | None
    strategy: str
    algorithm: str
    settings: dict
    early_stopping: dict | None
    params: list[_Param]
    references: dict  # trialParameters name -> parameter name
    command: list[str]
    max_trials: int
    parallel: int
    max_failed: int
    metric_formats: list

    @classmethod
    def read(cls, experiment: dict) -> "Plan":
        spec = _get(experiment, "spec", dict)
        name = _get(_get(experiment, "metadata", dict, "metadata"), "name", str, "metadata.name")
        objective = _get(spec, "objective", dict, "spec.objective")
        direction = _get(objective, "type", str, "spec.objective.type")
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"experiment spec.objective.type: {direction!r} is not maximize or minimize")
        metric = _get(objective, "objectiveMetricName", str, "spec.objective.objectiveMetricName")
        strategies = {s.get("name"): s.get("value") for s in objective.get("metricStrategies") or []}
        strategy = strategies.get(metric, "latest")
        if strategy not in ("latest", "max", "min"):
            raise ConfigError(f"experiment spec.objective.metricStrategies: {strategy!r} for {metric} is not latest, max or min")
        goal = objective.get("goal")
        algorithm_spec = _get(spec, "algorithm", dict, "spec.algorithm")
        algorithm = _get(algorithm_spec, "algorithmName", str, "spec.algorithm.algorithmName")
        if algorithm not in _SETTINGS:
            raise ConfigError(f"experiment spec.algorithm.algorithmName: {algorithm!r} does not run locally; "
                              f"use one of {', '.join(_SETTINGS)}")
        settings = _settings(algorithm_spec, "spec.algorithm.algorithmSettings")
        unknown = sorted(set(settings) - set(_SETTINGS[algorithm]))
        if unknown:
            raise ConfigError(f"experiment spec.algorithm.algorithmSettings: {', '.join(unknown)} not supported locally "
                              f"for {algorithm} (supported: {', '.join(_SETTINGS[algorithm])})")
        early = spec.get("earlyStopping")
        if early:
            if early.get("algorithmName") != "medianstop":
                raise ConfigError(f"experiment spec.earlyStopping.algorithmName: {early.get('algorithmName')!r}; "
                                  "only medianstop runs locally")
            if algorithm == "hyperband":
                raise ConfigError("experiment spec.earlyStopping: hyperband already stops trials early; remove early stopping")
            early = _settings(early, "spec.earlyStopping.algorithmSettings")
        params = [_read_param(p, i, algorithm) for i, p in enumerate(_get(spec, "parameters", list, "spec.parameters"))]
        if not params:
            raise ConfigError("experiment spec.parameters: empty; give at least one parameter to search")
        if algorithm == "hyperband":
            params = _pin_resource(params, settings)
        template = _get(spec, "trialTemplate", dict, "spec.trialTemplate")
        known = {p.name for p in params}
        references = {}
        for i, item in enumerate(template.get("trialParameters") or []):
            reference = item.get("reference")
            if reference not in known:
                raise ConfigError(f"experiment spec.trialTemplate.trialParameters[{i}].reference: {reference!r} "
                                  "is not a name in spec.parameters")
            references[item.get("name")] = reference
        command = _container_command(template)
        _shell_words(command)  # unbalanced quotes fail here, before any trial
        for arg in command:
            for placeholder in _PLACEHOLDER.findall(arg):
                if placeholder not in references:
                    raise ConfigError(f"experiment trial container args: ${{trialParameters.{placeholder}}} is not in "
                                      "spec.trialTemplate.trialParameters")
            leftover = _ANY_PLACEHOLDER.findall(_PLACEHOLDER.sub("", arg))
            if leftover:
                raise ConfigError(f"experiment trial container args: {leftover[0]} cannot be substituted locally; "
                                  "only ${trialParameters.<name>} can")
        max_trials = _count(spec, "maxTrialCount", None)
        if max_trials is None:
            raise ConfigError("experiment spec.maxTrialCount: required for a local search (set tune.max_trials)")
        collector = (spec.get("metricsCollectorSpec") or {}).get("collector") or {}
        if collector.get("kind", "StdOut") != "StdOut":
            raise ConfigError(f"experiment spec.metricsCollectorSpec.collector.kind: {collector.get('kind')!r}; "
                              "the local backend reads StdOut metrics only")
        source_filter = ((spec.get("metricsCollectorSpec") or {}).get("source") or {}).get("filter") or {}
        formats = [re.compile(f) for f in source_filter.get("metricsFormat") or [KATIB_METRICS_FORMAT]]
        return cls(
            name=name, direction=direction, metric=metric, goal=None if goal is None else float(goal), strategy=strategy,
            algorithm=algorithm, settings=settings, early_stopping=early, params=params, references=references,
            command=command, max_trials=max_trials, parallel=_count(spec, "parallelTrialCount", 3),
            max_failed=_count(spec, "maxFailedTrialCount", max_trials), metric_formats=formats,
        )

    def argv(self, params: dict) -> list[str]:
        """The trial's command with the sampled values substituted, run with this interpreter."""
        by_name = {p.name: p for p in self.params}

        def text(match):
            name = self.references[match.group(1)]
            value = params[name]
            texts = by_name[name].texts
            if texts is not None:
                return texts[value]
            if isinstance(value, int):
                return str(value)
            text = format(value, ".15g")  # no float noise like 0.30000000000000004
            # A double stays a double for the trial's parser: 1.0, not 1 (Katib substitutes "1.0" too).
            return text if any(c in text for c in ".en") else f"{text}.0"

        argv = _shell_words([_PLACEHOLDER.sub(text, arg) for arg in self.command])
        # The image's `python` is this environment's interpreter here.
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        return argv

    def metric_values(self, line: str) -> list[float]:
        """The objective metric's values in one stdout line, as Katib's collector reads them."""
        if self.metric not in line:
            return []
        values = []
        for pattern in self.metric_formats:
            for match in pattern.finditer(line):
                if match.group(1).strip() != self.metric:
                    continue
                try:
                    value = float(match.group(2).strip())
                except ValueError:
                    continue
                if math.isfinite(value):
                    values.append(value)
        return values

    def result(self, values: list[float]) -> float:
        return {"latest": values[-1], "max": max(values), "min": min(values)}[self.strategy]

    def reached(self, value: float | None) -> bool:
        if self.goal is None or value is None:
            return False
        return value >= self.goal if self.direction == "maximize" else value <= self.goal


def _get(container: dict, key: str, kind: type, where: str | None = None):
    value = container.get(key) if isinstance(container, dict) else None
    if not isinstance(value, kind):
        raise ConfigError(f"experiment {where or key}: missing or not a {kind.__name__}")
    return value


def _settings(section: dict, where: str) -> dict:
    items = section.get("algorithmSettings") or []
    try:
        return {item["name"]: item["value"] for item in items}
    except (KeyError, TypeError):
        raise ConfigError(f"experiment {where}: every item needs name and value") from None


def _count(spec: dict, key: str, default: int | None) -> int | None:
    value = spec.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < (0 if key == "maxFailedTrialCount" else 1):
        raise ConfigError(f"experiment spec.{key}: {value!r} is not a {'non-negative' if key == 'maxFailedTrialCount' else 'positive'} whole number")
    return int(value)


def _number(space: dict, key: str, where: str, kind=float):
    text = space.get(key)
    if text is None:
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"experiment {where}.{key}: {text!r} is not a number") from None
    if kind is int:
        if not value.is_integer():
            raise ConfigError(f"experiment {where}.{key}: {text!r} is not a whole number (parameterType int)")
        return int(value)
    return value


def _read_param(item: dict, index: int, algorithm: str) -> _Param:
    """A Katib ParameterSpec as an Optuna distribution (and, for grid, its list of values)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    name = _get(item, "name", str, f"spec.parameters[{index}].name")
    where = f"spec.parameters[{index}] ({name}).feasibleSpace"
    kind = item.get("parameterType")
    space = _get(item, "feasibleSpace", dict, where)
    if kind == "categorical":
        texts = [str(v) for v in space.get("list") or []]
        if not texts:
            raise ConfigError(f"experiment {where}.list: empty; list the values to search")
        values = [parse_value(t) for t in texts]
        if len(set(values)) != len(values):  # "1", "1.0" and "true" are one value to Python (and to Optuna)
            raise ConfigError(f"experiment {where}.list: {texts} repeats a value")
        return _Param(name, CategoricalDistribution(values), values, dict(zip(values, texts)))
    if kind not in ("double", "int"):
        raise ConfigError(f"experiment spec.parameters[{index}] ({name}).parameterType: {kind!r} is not double, int or categorical")
    number = int if kind == "int" else float
    low, high, step = (_number(space, key, where, number) for key in ("min", "max", "step"))
    if low is None or high is None or low >= high:
        raise ConfigError(f"experiment {where}: needs min below max (got {space.get('min')!r}..{space.get('max')!r})")
    distribution = space.get("distribution") or "uniform"
    if distribution not in ("uniform", "logUniform"):
        raise ConfigError(f"experiment {where}.distribution: {distribution!r} does not run locally; use uniform or logUniform")
    log = distribution == "logUniform"
    if log and low <= 0:
        raise ConfigError(f"experiment {where}.min: a logUniform space needs min > 0 (got {low})")
    if log and step not in (None, 1):
        raise ConfigError(f"experiment {where}: step and logUniform cannot be combined; drop one")
    if kind == "int":
        dist = IntDistribution(low, high, step=step or 1, log=log)
    else:
        dist = FloatDistribution(low, high, step=step, log=log)
    if algorithm != "grid":
        return _Param(name, dist, None)
    if kind == "int":
        return _Param(name, dist, list(range(low, high + 1, step or 1)))
    if step is None:
        raise ConfigError(f"experiment {where}.step: grid needs a step for double parameters")
    # Decimal arithmetic on Katib's strings: 0.1 + 2 * 0.1 is 0.3 here, not 0.30000000000000004.
    start, stride, stop = (decimal.Decimal(str(space[k])) for k in ("min", "step", "max"))
    return _Param(name, dist, [float(start + i * stride) for i in range(int((stop - start) / stride) + 1)])


def _pin_resource(params: list[_Param], settings: dict) -> list[_Param]:
    from optuna.distributions import IntDistribution

    resource = settings.get("resource_name")
    try:
        r_l = int(float(settings.get("r_l")))
        eta = int(float(settings.get("eta", 3)))
    except (TypeError, ValueError):
        raise ConfigError("experiment spec.algorithm.algorithmSettings: hyperband needs whole-number r_l and eta") from None
    if eta < 2 or r_l < 1:
        raise ConfigError(f"experiment spec.algorithm.algorithmSettings: hyperband needs eta >= 2 and r_l >= 1 (got {eta}, {r_l})")
    if resource not in {p.name for p in params}:
        raise ConfigError(f"experiment spec.algorithm.algorithmSettings.resource_name: {resource!r} is not in spec.parameters")
    # One-value distribution: every trial gets the full budget, and the value is still recorded with the trial.
    return [_Param(p.name, IntDistribution(r_l, r_l), None) if p.name == resource else p for p in params]


def _container_command(template: dict) -> list[str]:
    where = "spec.trialTemplate.trialSpec"
    primary = template.get("primaryContainerName")
    try:
        containers = template["trialSpec"]["spec"]["template"]["spec"]["containers"]
    except (KeyError, TypeError):
        raise ConfigError(f"experiment {where}: not a Job with spec.template.spec.containers") from None
    chosen = [c for c in containers if c.get("name") == primary] if primary else containers[:1]
    if not chosen:
        raise ConfigError(f"experiment spec.trialTemplate.primaryContainerName: no container named {primary!r}")
    command = [str(a) for a in (chosen[0].get("command") or []) + (chosen[0].get("args") or [])]
    if not command:
        raise ConfigError(f"experiment {where}: the trial container has no command")
    return command


def _shell_words(words: list[str]) -> list[str]:
    """The argv a trial gets under Katib's StdOut collector, which runs it as
    `sh -c "<command> <args joined by spaces> 1>metrics.log ..."`: so each arg is
    shell-quoted in the Experiment (experiment.py), and is split back here the
    way the shell would (quotes and whitespace; no variables or globs)."""
    try:
        argv = shlex.split(" ".join(words))
    except ValueError as err:
        raise ConfigError(f"experiment trial container command/args: {err} (the args are shell words)") from None
    if not argv:
        raise ConfigError("experiment trial container: the command is empty")
    return argv


def fingerprint(experiment: dict) -> str:
    """What a resumed search must share with the first run: everything but the three trial counts."""
    spec = {k: v for k, v in experiment.get("spec", {}).items() if k not in _COUNTS}
    data = json.dumps({"name": experiment["metadata"]["name"], "spec": spec}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


